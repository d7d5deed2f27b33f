//! The format layer: compression wrappers, archives, containers and CD images, each decoded
//! behind [`crate::io::ReadAt`]. [`open()`] reads a path's bytes and peels one layer after the
//! other down to the disk image.
//!
//! # Layout
//!
//! | folder | formats |
//! |---|---|
//! | [`compress`] | gzip, xz (streamed, or block by block from its index), zstd, seekable zstd (its seek table read and written in one place), bzip2, lz4 |
//! | `archive` | zip (the image member is opened), 7z (identified) |
//! | [`container`] | Android sparse, qcow/qcow2, VHD, VHDX, VMDK, VDI, DMG |
//! | [`cd`] | CUE sheets, raw 2352-byte sectors (BIN), ISO9660 |
//! | `raw` | everything else: the disk image itself |
//!
//! Beside them: [`stream`] decodes any streaming codec with random access on top, `frames`
//! serves reads from independently decodable frames, `driver` holds the one trait every
//! format implements ([`FormatDriver`]), `registry` lists the drivers ([`DRIVERS`]) and
//! [`open()`] loops over them.
//!
//! # One driver per format
//!
//! Every format lives in one file that owns all of it: its [`Format`] identity (name, kind),
//! how it is recognised (from bytes only: the head of the source, and its last sector when
//! reading that costs no decoding; never the file name; a format known by its last sector also
//! answers [`trailer_format`]), how it is opened (header facts, the decoded bytes inside) and
//! what its header says. [`open()`] is a loop: read a [`Probe`], ask the
//! [`DRIVERS`] in order which one recognises it, let that driver open one layer,
//! and go on with the bytes inside, at most [`MAX_DEPTH`] layers deep. An [`OpenCtx`] gives
//! drivers what lies outside the bytes: the files beside the image (a CUE sheet's BIN) and the
//! nesting depth.
//!
//! # Adding a format
//!
//! One new file, declared in its folder's `mod.rs`, and one line in [`registry::DRIVERS`]. For
//! a container `foo` whose files start with `FOO!` and hold the raw disk after a 512-byte
//! header, `src/format/container/foo.rs` would read:
//!
//! ```ignore
//! //! Foo disk images: a 512-byte header, then the raw disk.
//!
//! use std::sync::Arc;
//!
//! use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
//! use crate::format::kind::{Format, Kind};
//! use crate::io::{ReadAt, Slice};
//!
//! impl Format {
//!     /// Foo disk image.
//!     #[allow(non_upper_case_globals)]
//!     pub const Foo: Format = Format::new("foo", "foo", Kind::Container);
//! }
//!
//! /// Recognises and opens Foo images.
//! pub struct Driver;
//!
//! impl FormatDriver for Driver {
//!     fn format(&self) -> Format {
//!         Format::Foo
//!     }
//!     fn name_hints(&self) -> &'static [&'static str] {
//!         &["foo"]
//!     }
//!     fn detect(&self, p: &Probe<'_>) -> bool {
//!         p.head().starts_with(b"FOO!")
//!     }
//!     fn open(&self, src: Arc<dyn ReadAt>, _ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
//!         let len = src.size().saturating_sub(512);
//!         let layer = Layer::stored(Format::Foo, &*src, Some(format!("{len}-byte disk")));
//!         Ok(Step::inner(layer, Arc::new(Slice::new(src, 512, len))))
//!     }
//! }
//! ```
//!
//! (drivers import from `kind.rs` and `driver.rs`, never through this façade, so no driver and
//! the façade import each other), then `pub mod foo;` in `container/mod.rs` and, in [`registry::DRIVERS`], before the formats
//! it must win against (the list is the order of precedence):
//!
//! ```ignore
//!     &container::foo::Driver,
//! ```

pub(crate) mod archive;
pub mod cd;
pub mod compress;
pub mod container;
pub(crate) mod driver;
mod frames;
pub(crate) mod kind;
pub mod open;
pub(crate) mod raw;
pub(crate) mod registry;
pub mod stream;

pub use driver::OpenOptions;
pub use driver::MAX_DEPTH;
pub use driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
pub use kind::Format;
pub use open::{open, open_source, Opened, RemoteInfo};
pub(crate) use registry::check_tail;
pub use registry::{sniff, trailer_format, DRIVERS};
