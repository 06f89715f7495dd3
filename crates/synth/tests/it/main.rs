//! Integration tests of the synthetic insurer. They read the files the way
//! a downstream user would, with their own parsers and the official code
//! list, never with the generator's internals.

mod support;

mod databases;
mod determinism;
mod insurer;
