"""Pure domain types and rules: no HTTP, MQTT, serial or SQL here."""
