//! Archives of files, one of which is the image: zip (the image member is opened), tar and
//! `.ova` (the image member is a window of the archive), 7z (identified only).

pub(crate) mod sevenzip;
pub(crate) mod tar;
pub(crate) mod zip;
