//! Archives of files, one of which is the image: zip (the image member is opened) and 7z
//! (identified only).

pub mod sevenzip;
pub mod zip;
