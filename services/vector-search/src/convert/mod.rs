//! Validation and conversion between the gRPC messages and the domain model.
//! Every error names the request field it is about (`points[3].vector[7]`).
//! Split by what the request is about: collections, points, searches.

mod collections;
mod points;
mod search;

pub use self::{collections::*, points::*, search::*};

use crate::error::VectorError;

type Result<T> = std::result::Result<T, VectorError>;
