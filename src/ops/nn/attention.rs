//! attention (to be implemented).
