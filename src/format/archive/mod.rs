//! Archives of files, one of which is the image: zip (the image member is opened) and 7z
//! (identified only).

pub(crate) mod sevenzip;
pub(crate) mod zip;
