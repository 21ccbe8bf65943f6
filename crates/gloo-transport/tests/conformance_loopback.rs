//! The transport conformance suite over the in-process transport: plain, with every
//! non-empty send waiting for its receiver, and with havoc under several seeds.

use gloo_testing::conformance::boxed;
use gloo_transport::Communicator;
use gloo_transport::loopback::{LoopbackConfig, group};

fn plain(size: u32) -> Vec<Box<dyn Communicator>> {
    boxed(group(size, LoopbackConfig::default()))
}

fn rendezvous(size: u32) -> Vec<Box<dyn Communicator>> {
    boxed(group(size, LoopbackConfig::default().with_eager_limit(0)))
}

fn havoc_1(size: u32) -> Vec<Box<dyn Communicator>> {
    boxed(group(size, LoopbackConfig::havoc(1)))
}

fn havoc_2(size: u32) -> Vec<Box<dyn Communicator>> {
    boxed(group(size, LoopbackConfig::havoc(0x5EED_0002)))
}

fn havoc_3(size: u32) -> Vec<Box<dyn Communicator>> {
    boxed(group(size, LoopbackConfig::havoc(0xDEAD_BEEF_0003)))
}

mod plain {
    gloo_testing::conformance_tests!(super::plain);
}

mod rendezvous {
    gloo_testing::conformance_tests!(super::rendezvous);
}

mod havoc_1 {
    gloo_testing::conformance_tests!(super::havoc_1);
}

mod havoc_2 {
    gloo_testing::conformance_tests!(super::havoc_2);
}

mod havoc_3 {
    gloo_testing::conformance_tests!(super::havoc_3);
}
