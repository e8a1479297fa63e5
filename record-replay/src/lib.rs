//! Deterministic record and replay (DESIGN §4). Not yet implemented: see issue 3.
//! The crate exists so the workspace has the layout of DESIGN §2.
