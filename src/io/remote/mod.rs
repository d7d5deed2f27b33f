//! Remote images and destinations: objects on web servers and in S3-compatible buckets.
//!
//! `http` is the transport (one ureq agent, retries); `s3` signs requests for buckets and
//! speaks the object API; [`upload`] writes an archive into a bucket as a multipart upload.

pub(crate) mod http;
pub(crate) mod s3;
pub mod upload;
