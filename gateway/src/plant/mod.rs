//! The plant model: the catalogue of quantities and how a site binds them to sources.
