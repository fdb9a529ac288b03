//! Aggregation (issue 10, in progress): windows of 1 minute and 1 hour per quantity and instance.
//! So far only the pure core is built, [`window`]; the durable consumer that feeds it from the
//! store by its own cursor, the windows' tables, retention and the history API are not.

pub mod window;
