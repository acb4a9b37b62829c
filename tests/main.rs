//! runway's end-to-end tests: the real binaries, in temporary projects, one test binary.

mod local;
mod remote;
mod support;
