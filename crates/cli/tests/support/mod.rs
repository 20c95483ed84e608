//! Shared by the datastore test binaries (each uses some of it).
#![allow(dead_code)]

pub mod conformance;
pub mod moto;
pub mod python;
pub mod s3;
pub mod script;
