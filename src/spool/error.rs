//! The spool's error type: what failed, and on which file.

use std::io;
use std::path::PathBuf;

use super::id::QueueId;
use super::message::MessageState;

/// An error from the spool. File errors name the operation and the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file or directory operation failed.
    #[error("spool: cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("create", "fsync", "write to", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `Spool` in this one) has the spool open for writing.
    #[error("spool: {path} is locked by another writer (is the gateway already running?)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A record that passed its checksum could not be decoded, or a record asked for by
    /// location is not intact.
    #[error("spool: {path} at offset {offset}: corrupt record: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// No message with this queue id in the spool.
    #[error("spool: no message {id} in {dir}")]
    NotFound {
        /// The queue id asked for.
        id: QueueId,
        /// The spool directory.
        dir: PathBuf,
    },
    /// `commit` was given a queue id already in the spool.
    #[error("spool: message {id} is already in the spool")]
    Duplicate {
        /// The queue id.
        id: QueueId,
    },
    /// A state change for a message that is already delivered, bounced or deleted.
    #[error("spool: message {id} is already {state}")]
    AlreadyFinal {
        /// The queue id.
        id: QueueId,
        /// Its final state.
        state: MessageState,
    },
    /// The message cannot be stored as given (no recipients, too large, bad recipient
    /// index in a state change).
    #[error("spool: message {id}: {reason}")]
    Invalid {
        /// The queue id.
        id: QueueId,
        /// What is wrong.
        reason: String,
    },
    /// The spool was closed, or its writer thread stopped.
    #[error("spool: the spool writer has stopped")]
    Closed,
}

impl SpoolError {
    /// An [`SpoolError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A copy to hand to each waiter of a failed batch (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            SpoolError::Io { op, path, source } => SpoolError::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            SpoolError::Locked { path } => SpoolError::Locked { path: path.clone() },
            SpoolError::Corrupt {
                path,
                offset,
                reason,
            } => SpoolError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            SpoolError::NotFound { id, dir } => SpoolError::NotFound {
                id: *id,
                dir: dir.clone(),
            },
            SpoolError::Duplicate { id } => SpoolError::Duplicate { id: *id },
            SpoolError::AlreadyFinal { id, state } => SpoolError::AlreadyFinal {
                id: *id,
                state: *state,
            },
            SpoolError::Invalid { id, reason } => SpoolError::Invalid {
                id: *id,
                reason: reason.clone(),
            },
            SpoolError::Closed => SpoolError::Closed,
        }
    }
}
