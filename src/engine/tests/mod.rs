//! Tests of the engine through its public functions, on pipelines built with `fixture`.
//! Tests of a single helper live next to it; these cover how the pieces behave together.

mod dataflow;
mod evaluate;
mod layers;
mod plan_run;
mod plan_task;
mod simulate;
mod step;
mod support;
mod validate;
