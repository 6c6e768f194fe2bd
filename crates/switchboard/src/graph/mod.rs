//! Graph's wire format: lenient parsing of request bodies and exact rendering of resources and
//! notifications.

pub mod parse;
pub mod render;
