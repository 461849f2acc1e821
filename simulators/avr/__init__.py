"""An Arduino Uno emulated with simavr: the real Optiboot and a Firmata sketch built with avr-gcc."""
