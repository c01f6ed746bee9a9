//! Pipeline step 4 for one policy, plan: the pure diff ([`crate::engine::observe::plan`], as
//! the CLI plans), refused when it names keys the policy cannot touch.

use super::connection::Conn;
use crate::engine::observe::Observed;
use crate::plan::Plan;
use jiff::Timestamp;

/// The plan names keys it cannot touch (a name taken by a key keyward does not own): `Conflict`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Conflict(pub Vec<String>);

pub fn plan(o: &Observed, conn: &Conn, now: Timestamp) -> Result<Plan, Conflict> {
    let plan = crate::engine::observe::plan(o, &conn.endpoint, now);
    if plan.problems.is_empty() {
        Ok(plan)
    } else {
        Err(Conflict(plan.problems))
    }
}
