//! Empty library target: lets `traffic-shift-datapath` list this crate as a
//! build dependency, so cargo rebuilds the agent when the kernel code changes.
#![no_std]
