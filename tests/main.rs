//! runway's end-to-end tests: the real binaries, in temporary projects, one test binary.

// The support module is this binary's own; `pub` there just means "for the test modules".
#![allow(unreachable_pub)]

mod faults;
mod jobs;
mod local;
mod python_client;
mod remote;
mod submit;
mod support;
