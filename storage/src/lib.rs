//! rmox-storage: everything rmox keeps, durable before acknowledged.
