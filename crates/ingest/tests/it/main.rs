//! Integration tests of bronze ingestion on real Delta tables, real files
//! and real databases.

mod support;

mod bad_input;
mod landing;
mod sql;
