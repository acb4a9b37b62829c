//! Job history and control: list, inspect, logs, cancel, runner list, lost.
