//! Streaming-read bandwidth probe (written with the bench).
