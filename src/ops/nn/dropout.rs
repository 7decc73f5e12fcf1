//! dropout (to be implemented).
