//! placeholder: filled in by the sources work
