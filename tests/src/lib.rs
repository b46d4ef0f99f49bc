//! Harness for end-to-end tests (in progress)
