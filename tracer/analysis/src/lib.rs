//! The analysis: pure logic over the model, from a wire record to what an operator should act
//! on, with no I/O, so that it is unit-tested and benchmarked without root or a kernel.
//! [`decode`] (wire record → [`decode::Event`]) → [`track`] (timestamp order, one connection per
//! socket, its verdict) → [`find`] (the findings of an interval); [`pipeline`] runs that path
//! for the tracer and the benchmarks alike, and [`filter`] is what the operator asked to see.
//! [`bounded`] is how the tables of both layers stay within their bounds.
mod bounded;
pub mod decode;
pub mod filter;
pub mod find;
pub mod pipeline;
pub mod track;

use tracer_model::{FastMap, FastSet};
