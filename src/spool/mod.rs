//! The durable spool: accepted messages, fsynced before the client hears `250`.
