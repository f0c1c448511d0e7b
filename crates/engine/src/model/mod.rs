//! Networks as burn modules: a list of active sub-networks S1..Sk plus a classifier block.
//!
//! Weights are drawn on the host from the engine's seeded streams (He normal, fan_in) rather
//! than by burn's initialisers, because the Flex backend's RNG is global and consumes its seed
//! after one operation, which would make runs irreproducible.

pub mod describe;
pub mod net;
pub mod spec;
pub mod unit;

pub use net::{Act, BasicBlock, Classifier, ConvBn, Dense, Net, SubNet, Unit};
pub use spec::{Arch, NetSpec};
pub use unit::{Feat, UnitKind, UnitSpec};
