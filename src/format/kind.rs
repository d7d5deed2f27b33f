//! What a format is: its identity ([`Format`]) and the kind of layer it makes ([`Kind`]).
//! Apart from the format façade (`mod.rs`), which lists the drivers, so that every driver
//! names its `Format` from here and no driver and the façade import each other.

use serde::Serialize;

/// What kind of layer a format is, which decides how [`open()`](super::open()) treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A compression wrapper that decodes to exactly one byte stream.
    Compression,
    /// An archive of files, one of which is the image.
    Archive,
    /// A disk-image container (a virtual disk, a sparse image).
    Container,
    /// A CD image: a CUE sheet or raw sectors with more than the user data.
    Cd,
    /// The image itself (a raw disk or filesystem image, an ISO9660 image): the chain ends.
    Image,
}

/// A format blockwise recognises as a layer of an image.
///
/// An open set: each format's file defines its own `Format::Name` constant next to its driver
/// (named like the enum variants it replaced, so `Format::Gzip` reads as before and works in
/// patterns). The identity is the `id`, which is also how it appears in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    id: &'static str,
    name: &'static str,
    kind: Kind,
}

impl Format {
    /// A format with its JSON `id` (kebab-case), the `name` shown to people, and its kind.
    pub(crate) const fn new(id: &'static str, name: &'static str, kind: Kind) -> Format {
        Format { id, name, kind }
    }

    /// Identifier used in JSON ("seekable-zstd").
    #[cfg(test)]
    pub(crate) fn id(self) -> &'static str {
        self.id
    }

    /// Short lowercase name used in output ("zstd (seekable)").
    pub fn name(self) -> &'static str {
        self.name
    }

    /// What kind of layer it is.
    pub(crate) fn kind(self) -> Kind {
        self.kind
    }

    /// True for pure compression wrappers that decode to exactly one byte stream.
    pub fn is_compression(self) -> bool {
        self.kind == Kind::Compression
    }
}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id)
    }
}
