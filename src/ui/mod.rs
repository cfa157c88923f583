pub mod graph;
pub mod layout;
