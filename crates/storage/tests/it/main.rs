//! Integration tests of the warehouse layer on real Delta tables in
//! temporary folders, and on object-store emulators.

mod clock;
mod ledger;
mod object_store;
mod warehouse;
