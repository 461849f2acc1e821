// LabFleetFirmata: the subset of Firmata 2.5 that LabFleet's driver and common host libraries use,
// built against the Arduino AVR core (Debian's arduino-core-avr ships no Firmata library, so
// StandardFirmata's source is not available to build here).
//
// Implemented: version report (on start and on query), firmware name report, capability and analog
// mapping queries, pin state query, SET_PIN_MODE (INPUT, OUTPUT, ANALOG, PULLUP), SET_DIGITAL_PIN_VALUE,
// digital port writes (0x90), analog reporting (0xC0), digital port reporting (0xD0: the port's value
// when enabled, then on every change), SAMPLING_INTERVAL and SYSTEM_RESET. Like StandardFirmata it
// talks at 57600 baud and announces its version and name from setup(), after the bootloader hands over.
// Not implemented: PWM, servo, I2C, serial passthrough, string data from the host.

#include <Arduino.h>

#ifndef SKETCH_VERSION
#define SKETCH_VERSION "0.0.0"
#endif

namespace {

const uint8_t FIRMATA_MAJOR = 2;
const uint8_t FIRMATA_MINOR = 5;
const char SKETCH_NAME[] = "LabFleetFirmata-" SKETCH_VERSION;

const uint8_t DIGITAL_MESSAGE = 0x90, ANALOG_MESSAGE = 0xE0, REPORT_ANALOG = 0xC0, REPORT_DIGITAL = 0xD0;
const uint8_t SET_PIN_MODE = 0xF4, SET_DIGITAL_PIN_VALUE = 0xF5, REPORT_VERSION = 0xF9;
const uint8_t SYSTEM_RESET = 0xFF, START_SYSEX = 0xF0, END_SYSEX = 0xF7;
const uint8_t ANALOG_MAPPING_QUERY = 0x69, ANALOG_MAPPING_RESPONSE = 0x6A, CAPABILITY_QUERY = 0x6B;
const uint8_t CAPABILITY_RESPONSE = 0x6C, PIN_STATE_QUERY = 0x6D, PIN_STATE_RESPONSE = 0x6E;
const uint8_t REPORT_FIRMWARE = 0x79, SAMPLING_INTERVAL = 0x7A;
const uint8_t MODE_INPUT = 0, MODE_OUTPUT = 1, MODE_ANALOG = 2, MODE_PULLUP = 0x0B;

const uint8_t PINS = 20;        // D0..D13, A0..A5 (D14..D19)
const uint8_t FIRST_ANALOG = 14;
const uint8_t PORTS = 3;        // Firmata ports of 8 pins
const uint16_t MAX_SYSEX = 64;

uint8_t mode[PINS];
uint8_t state[PINS];            // OUTPUT: the level written; INPUT/PULLUP: 1 when the pull-up is on
uint8_t analogReporting;        // bit per channel
uint8_t digitalReporting;       // bit per port
uint8_t lastPort[PORTS];
uint16_t samplingMs = 19;
unsigned long lastSample;

uint8_t command, need, got, data[2];
bool inSysex;
uint8_t sysex[MAX_SYSEX];
uint16_t sysexLen;

bool isDigital(uint8_t pin) { return pin >= 2 && pin < PINS; }  // 0 and 1 are the serial port
bool isAnalog(uint8_t pin) { return pin >= FIRST_ANALOG && pin < PINS; }

void send7(uint16_t value) {
  Serial.write(value & 0x7F);
  Serial.write((value >> 7) & 0x7F);
}

void reportVersion() {
  Serial.write(REPORT_VERSION);
  Serial.write(FIRMATA_MAJOR);
  Serial.write(FIRMATA_MINOR);
}

void reportFirmware() {
  Serial.write(START_SYSEX);
  Serial.write(REPORT_FIRMWARE);
  Serial.write(FIRMATA_MAJOR);
  Serial.write(FIRMATA_MINOR);
  for (const char *c = SKETCH_NAME; *c; c++) send7(static_cast<uint8_t>(*c));
  Serial.write(END_SYSEX);
}

uint8_t readPort(uint8_t port) {
  uint8_t value = 0;
  for (uint8_t bit = 0; bit < 8; bit++) {
    uint8_t pin = port * 8 + bit;
    if (pin >= PINS || !isDigital(pin)) continue;
    if (mode[pin] == MODE_INPUT || mode[pin] == MODE_PULLUP || mode[pin] == MODE_OUTPUT) {
      if (digitalRead(pin) == HIGH) value |= 1 << bit;
    }
  }
  return value;
}

void sendPort(uint8_t port, uint8_t value) {
  Serial.write(DIGITAL_MESSAGE | port);
  send7(value);
}

void setMode(uint8_t pin, uint8_t m) {
  if (!isDigital(pin)) return;
  switch (m) {
    case MODE_OUTPUT:
      digitalWrite(pin, state[pin] && mode[pin] == MODE_OUTPUT ? HIGH : LOW);
      pinMode(pin, OUTPUT);
      state[pin] = digitalRead(pin) == HIGH;
      break;
    case MODE_PULLUP:
      pinMode(pin, INPUT_PULLUP);
      state[pin] = 1;
      break;
    case MODE_ANALOG:
      if (!isAnalog(pin)) return;
      pinMode(pin, INPUT);
      state[pin] = 0;
      break;
    case MODE_INPUT:
      pinMode(pin, INPUT);
      state[pin] = 0;
      break;
    default:
      return;  // a mode this sketch does not offer: the pin keeps its mode
  }
  mode[pin] = m;
}

void writePin(uint8_t pin, uint8_t value) {
  if (!isDigital(pin)) return;
  if (mode[pin] == MODE_OUTPUT) {
    digitalWrite(pin, value ? HIGH : LOW);
    state[pin] = value ? 1 : 0;
  } else if (mode[pin] == MODE_INPUT || mode[pin] == MODE_PULLUP) {
    // Firmata 2.5: writing HIGH to an input pin enables its pull-up.
    pinMode(pin, value ? INPUT_PULLUP : INPUT);
    mode[pin] = value ? MODE_PULLUP : MODE_INPUT;
    state[pin] = value ? 1 : 0;
  }
}

void resetState() {
  for (uint8_t pin = 0; pin < PINS; pin++) {
    state[pin] = 0;
    if (!isDigital(pin)) {
      mode[pin] = MODE_INPUT;
      continue;
    }
    mode[pin] = 0xFF;
    if (isAnalog(pin)) {
      setMode(pin, MODE_ANALOG);
    } else {
      setMode(pin, MODE_OUTPUT);  // StandardFirmata's default for digital pins
    }
  }
  analogReporting = 0;
  digitalReporting = 0;
  samplingMs = 19;
  for (uint8_t port = 0; port < PORTS; port++) lastPort[port] = readPort(port);
}

void capabilities() {
  Serial.write(START_SYSEX);
  Serial.write(CAPABILITY_RESPONSE);
  for (uint8_t pin = 0; pin < PINS; pin++) {
    if (isDigital(pin)) {
      Serial.write(MODE_INPUT);
      Serial.write(1);
      Serial.write(MODE_PULLUP);
      Serial.write(1);
      Serial.write(MODE_OUTPUT);
      Serial.write(1);
    }
    if (isAnalog(pin)) {
      Serial.write(MODE_ANALOG);
      Serial.write(10);
    }
    Serial.write(0x7F);
  }
  Serial.write(END_SYSEX);
}

void analogMapping() {
  Serial.write(START_SYSEX);
  Serial.write(ANALOG_MAPPING_RESPONSE);
  for (uint8_t pin = 0; pin < PINS; pin++) Serial.write(isAnalog(pin) ? pin - FIRST_ANALOG : 0x7F);
  Serial.write(END_SYSEX);
}

void pinState(uint8_t pin) {
  if (pin >= PINS) return;
  Serial.write(START_SYSEX);
  Serial.write(PIN_STATE_RESPONSE);
  Serial.write(pin);
  Serial.write(mode[pin] & 0x7F);
  Serial.write(state[pin] & 0x7F);
  Serial.write(END_SYSEX);
}

void onSysex() {
  if (sysexLen == 0) return;
  switch (sysex[0]) {
    case REPORT_FIRMWARE:
      reportFirmware();
      break;
    case CAPABILITY_QUERY:
      capabilities();
      break;
    case ANALOG_MAPPING_QUERY:
      analogMapping();
      break;
    case PIN_STATE_QUERY:
      if (sysexLen >= 2) pinState(sysex[1]);
      break;
    case SAMPLING_INTERVAL:
      if (sysexLen >= 3) {
        uint16_t ms = sysex[1] | (static_cast<uint16_t>(sysex[2]) << 7);
        samplingMs = ms < 1 ? 1 : ms;
      }
      break;
    default:
      break;  // unknown sysex: ignored, as StandardFirmata does
  }
}

void onMessage() {
  uint8_t type = command < 0xF0 ? command & 0xF0 : command;
  switch (type) {
    case DIGITAL_MESSAGE: {
      uint8_t port = command & 0x0F;
      uint8_t value = data[0] | (data[1] << 7);
      for (uint8_t bit = 0; bit < 8; bit++) {
        uint8_t pin = port * 8 + bit;
        if (pin < PINS && mode[pin] == MODE_OUTPUT) writePin(pin, (value >> bit) & 1);
      }
      break;
    }
    case REPORT_ANALOG:
      if ((command & 0x0F) < PINS - FIRST_ANALOG) {
        if (data[0]) analogReporting |= 1 << (command & 0x0F);
        else analogReporting &= ~(1 << (command & 0x0F));
      }
      break;
    case REPORT_DIGITAL: {
      uint8_t port = command & 0x0F;
      if (port < PORTS) {
        if (data[0]) {
          digitalReporting |= 1 << port;
          lastPort[port] = readPort(port);
          sendPort(port, lastPort[port]);  // the current value at once, as StandardFirmata does
        } else {
          digitalReporting &= ~(1 << port);
        }
      }
      break;
    }
    case SET_PIN_MODE:
      if (data[0] < PINS) setMode(data[0], data[1]);
      break;
    case SET_DIGITAL_PIN_VALUE:
      if (data[0] < PINS) writePin(data[0], data[1]);
      break;
    default:
      break;
  }
}

void onByte(uint8_t b) {
  if (inSysex) {
    if (b == END_SYSEX) {
      inSysex = false;
      onSysex();
    } else if (b & 0x80) {
      inSysex = false;  // a damaged sysex: drop it and parse the byte as a new command
      onByte(b);
    } else if (sysexLen < MAX_SYSEX) {
      sysex[sysexLen++] = b;
    }
    return;
  }
  if (b & 0x80) {
    need = 0;
    got = 0;
    uint8_t type = b < 0xF0 ? b & 0xF0 : b;
    switch (type) {
      case START_SYSEX:
        inSysex = true;
        sysexLen = 0;
        return;
      case REPORT_VERSION:
        reportVersion();
        return;
      case SYSTEM_RESET:
        resetState();
        return;
      case DIGITAL_MESSAGE:
      case ANALOG_MESSAGE:
      case SET_PIN_MODE:
      case SET_DIGITAL_PIN_VALUE:
        need = 2;
        break;
      case REPORT_ANALOG:
      case REPORT_DIGITAL:
        need = 1;
        break;
      default:
        return;
    }
    command = b;
    return;
  }
  if (need == 0) return;  // a data byte without a command
  data[got++] = b;
  if (got == need) {
    onMessage();
    need = 0;
    got = 0;
  }
}

}  // namespace

void setup() {
  Serial.begin(57600);
  resetState();
  reportVersion();
  reportFirmware();
  lastSample = millis();
}

void loop() {
  while (Serial.available() > 0) onByte(static_cast<uint8_t>(Serial.read()));
  for (uint8_t port = 0; port < PORTS; port++) {
    if (!(digitalReporting & (1 << port))) continue;
    uint8_t value = readPort(port);
    if (value != lastPort[port]) {
      lastPort[port] = value;
      sendPort(port, value);
    }
  }
  unsigned long now = millis();
  if (now - lastSample >= samplingMs) {
    lastSample = now;
    for (uint8_t ch = 0; ch < PINS - FIRST_ANALOG; ch++) {
      if (analogReporting & (1 << ch)) {
        Serial.write(ANALOG_MESSAGE | ch);
        send7(analogRead(ch));
      }
    }
  }
}
