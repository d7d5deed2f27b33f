//! What a container's header says ([`ContainerInfo`]). Apart from the container façade
//! (`mod.rs`) so that the container readers and the opening path take it from here and the
//! façade and its readers do not import each other.

use serde::Serialize;

use crate::format::kind::Format;

/// What a container header says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// The container format.
    pub(crate) format: Format,
    /// Size of the disk it describes, if the header says.
    pub virtual_size: Option<u64>,
    /// Human-readable facts ("version 3, cluster 64 KiB, backing file").
    pub detail: String,
    /// `(offset, len)` of raw disk bytes inside the file, when the container stores them as is.
    pub payload: Option<(u64, u64)>,
}

impl ContainerInfo {
    /// Facts without a payload window.
    pub(crate) fn new(format: Format, virtual_size: Option<u64>, detail: String) -> Self {
        ContainerInfo {
            format,
            virtual_size,
            detail,
            payload: None,
        }
    }
}
