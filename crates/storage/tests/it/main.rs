//! Integration tests of the warehouse layer on real Delta tables in
//! temporary folders.

mod ledger;
mod warehouse;
