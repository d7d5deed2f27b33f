//! The only place blockwise uses `unsafe`: ioctls on block devices.
