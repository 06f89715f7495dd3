//! The silver stage's integration tests: real bronze tables from real
//! landing files, real Delta tables in temporary folders.

mod actions;
mod by_key;
mod landing;
mod orphans;
mod support;
