//! Which disks are safe targets, and why the others are not: the candidate list `drives`
//! shows and the check `flash` makes before writing a byte.
//!
//! Read from the kernel alone (`/sys/block`, `/proc/self/mountinfo`, `/proc/swaps`; no udev,
//! no `lsblk`), through a [`SysRoot`] that tests point at fixture trees. [`list`] gives every
//! disk as a [`Drive`] (size, transport, model, partitions with labels and mounts, stacked
//! devices, a loop device's backing file) with its [`Verdict`]; [`judge`] holds the rules.

mod list;
mod model;
mod sysfs;
mod verdict;

pub use list::{find, is_listed, list};
pub use model::{Backing, Drive, Mount, Partition, Reason, Transport, Verdict};
pub use sysfs::{Host, SysRoot};
pub use verdict::{judge, Check, SYSTEM_POINTS};
