//! runway-tests: the end-to-end tests are in main.rs; this library is empty.
