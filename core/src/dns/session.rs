//! A DNS check in the session shape every machine here has: `handle(now, input)`, then
//! `poll` until `Idle` (or `Done`); effects carry tokens and their answers the same token.
//! One driver loop runs a check like it runs a server session or the stub resolver.
//!
//! ```text
//! let mut s = CheckSession::new(check, limits);
//! loop {
//!     match s.poll(now) {
//!         CheckOutput::Effect(token, lookups) => { /* look them up, then: */
//!             s.handle(now, CheckInput::Answered(token, results)); }
//!         CheckOutput::Idle { deadline, timer } => { /* wait for an answer or deadline: */
//!             s.handle(now, CheckInput::Timeout); }
//!         CheckOutput::Done(verdict) => break Some(verdict),
//!         CheckOutput::GaveUp(why) => break None,
//!     }
//! }
//! ```
//!
//! * The deadline of an effect is inside the machine: when no answer came by
//!   [`CheckLimits::answer_timeout`], its lookups count as temporary failures ("DNS timed
//!   out") and the check goes on (to its temporary-error verdict, usually); a late answer is
//!   stale and ignored.
//! * An answer with a token that is not outstanding (stale, duplicate, made up) is ignored.
//! * A `now` earlier than one given before is ignored: the session acts at the latest time
//!   it knows.
//! * The fan-out ("ask N lookups, collect, decide") is written once, here: the questions a
//!   check asks before it waits go out as one effect; [`CheckLimits::max_questions`] bounds
//!   the questions of the whole check.
//! * Without a clock (tests, tools over a static zone), [`run_sync`] and [`run_batched`]
//!   drive the same session, answering every effect at once, so no deadline applies.

use std::time::{Duration, Instant};

use super::{Check, CheckStep, Lookup, LookupResult};
use crate::{Now, Token};

/// The reason given to the lookups of an effect whose answers did not come in time.
const TIMED_OUT: &str = "DNS timed out";

/// One round of a check: every question it asks before it waits, or its verdict.
enum Round<V> {
    /// Ask these together, as one effect; empty when the check waits without asking
    /// anything (stuck: nobody will answer).
    Ask(Vec<Lookup>),
    /// The verdict.
    Done(V),
}

/// The fan-out: polls `check` until it waits or concludes, collecting at most `max`
/// questions; a check with more gets the rest in its next round.
fn round<C: Check + ?Sized>(check: &mut C, max: usize) -> Round<C::Verdict> {
    let mut ask = Vec::new();
    while ask.len() < max {
        match check.poll() {
            CheckStep::Lookup(q) => ask.push(q),
            CheckStep::Wait => break,
            CheckStep::Done(v) => return Round::Done(v),
        }
    }
    Round::Ask(ask)
}

/// Bounds of one check session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// How long one effect's answers are waited for.
    pub answer_timeout: Duration,
    /// Questions asked at most over the whole check.
    pub max_questions: usize,
    /// Questions in one effect at most; a round with more gives the rest in the next effect.
    pub max_batch: usize,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            answer_timeout: Duration::from_secs(30),
            max_questions: 64,
            max_batch: 64,
        }
    }
}

/// What a check session is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckInput {
    /// The answers to effect `Token`, in the order its lookups were given. Fewer answers
    /// than lookups: the missing ones are temporary failures.
    Answered(Token, Vec<LookupResult>),
    /// A deadline may have passed; an early call does nothing.
    Timeout,
}

/// The deadlines a check session keeps; [`CheckOutput::Idle`] names the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckTimer {
    /// Waiting for the answers to this effect ([`CheckLimits::answer_timeout`]).
    Answer(Token),
}

/// Why a check session ended without a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The check asked more than [`CheckLimits::max_questions`].
    TooManyQuestions,
    /// The check waits for answers to nothing it asked (a broken check).
    Stuck,
}

/// What a check session wants done, or has concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutput<V> {
    /// Look these up (one batch) and answer with [`CheckInput::Answered`] and this token.
    Effect(Token, Vec<Lookup>),
    /// Nothing to do until an answer comes or `deadline` passes.
    Idle {
        /// When to give [`CheckInput::Timeout`].
        deadline: Option<Instant>,
        /// The timer that deadline belongs to.
        timer: Option<CheckTimer>,
    },
    /// The verdict; returned from then on.
    Done(V),
    /// No verdict; returned from then on.
    GaveUp(GiveUp),
}

#[derive(Debug)]
enum State<V> {
    /// Ready to poll the check for its next round.
    Running,
    /// Effect `token` is out with these lookups, due by `deadline` (none when driven
    /// without a clock).
    Waiting {
        token: Token,
        lookups: Vec<Lookup>,
        deadline: Option<Instant>,
    },
    Done(V),
    GaveUp(GiveUp),
}

/// What one step of the session gives: an effect to send, a wait, or the end (the verdict
/// or the reason is in the state).
enum Step {
    Effect(Token, Vec<Lookup>),
    Idle(Option<Instant>, Token),
    Ended,
}

/// A [`Check`] in the session shape. See the module documentation.
#[derive(Debug)]
pub struct CheckSession<C: Check> {
    check: C,
    limits: CheckLimits,
    state: State<C::Verdict>,
    next_token: u64,
    /// Questions still allowed.
    budget: usize,
    /// The latest `now` given; an earlier one is ignored.
    last_now: Option<Now>,
}

impl<C: Check> CheckSession<C> {
    /// A session running `check` within `limits`.
    pub fn new(check: C, limits: CheckLimits) -> CheckSession<C> {
        CheckSession {
            check,
            limits,
            state: State::Running,
            next_token: 0,
            budget: limits.max_questions,
            last_now: None,
        }
    }

    /// The check (for what it knows besides its verdict, e.g. the SPF arguments).
    pub fn check(&self) -> &C {
        &self.check
    }

    /// The verdict, once [`CheckSession::poll`] has returned it.
    pub fn verdict(&self) -> Option<&C::Verdict> {
        match &self.state {
            State::Done(v) => Some(v),
            _ => None,
        }
    }

    /// Takes one input; drain [`CheckSession::poll`] afterwards.
    pub fn handle(&mut self, now: Now, input: CheckInput) {
        let now = self.clock(now);
        match input {
            CheckInput::Answered(token, results) => self.answered(token, results),
            CheckInput::Timeout => {
                let due = match &self.state {
                    State::Waiting {
                        deadline: Some(d), ..
                    } => *d <= now.mono,
                    _ => false,
                };
                if due {
                    self.answer(Vec::new(), TIMED_OUT);
                }
            }
        }
    }

    /// The answers to effect `token`, if it is the outstanding one.
    fn answered(&mut self, token: Token, results: Vec<LookupResult>) {
        if matches!(&self.state, State::Waiting { token: t, .. } if *t == token) {
            self.answer(results, "no answer");
        }
    }

    /// Gives the outstanding effect's lookups their answers (missing ones: temporary
    /// failures for `missing`) and makes the session ready for the next round.
    fn answer(&mut self, results: Vec<LookupResult>, missing: &str) {
        let State::Waiting { lookups, .. } = std::mem::replace(&mut self.state, State::Running)
        else {
            return;
        };
        let mut results = results.into_iter();
        for l in &lookups {
            let r = results
                .next()
                .unwrap_or_else(|| LookupResult::TempFail(missing.into()));
            self.check.answer(l, r);
        }
    }

    /// The time to act at: `now`, unless it is earlier than a time given before.
    fn clock(&mut self, now: Now) -> Now {
        match self.last_now {
            Some(last) if now.mono < last.mono => last,
            _ => {
                self.last_now = Some(now);
                now
            }
        }
    }

    /// The next step; a new effect is due by `deadline`.
    fn step(&mut self, deadline: Option<Instant>) -> Step {
        match &self.state {
            State::Done(_) | State::GaveUp(_) => return Step::Ended,
            State::Waiting {
                token, deadline, ..
            } => return Step::Idle(*deadline, *token),
            State::Running => {}
        }
        // At least one poll, even with the budget spent: the verdict may be there.
        match round(
            &mut self.check,
            self.budget.min(self.limits.max_batch).max(1),
        ) {
            Round::Done(v) => self.state = State::Done(v),
            Round::Ask(qs) if qs.is_empty() => self.state = State::GaveUp(GiveUp::Stuck),
            Round::Ask(_) if self.budget == 0 => {
                self.state = State::GaveUp(GiveUp::TooManyQuestions)
            }
            Round::Ask(qs) => {
                self.budget = self.budget.saturating_sub(qs.len());
                let token = Token(self.next_token);
                self.next_token += 1;
                self.state = State::Waiting {
                    token,
                    lookups: qs.clone(),
                    deadline,
                };
                return Step::Effect(token, qs);
            }
        }
        Step::Ended
    }

    /// Runs the session to its end without a clock: every effect is answered by
    /// `resolve_many` before the next step, so no deadline applies.
    fn run_untimed(
        mut self,
        mut resolve_many: impl FnMut(&[Lookup]) -> Vec<LookupResult>,
    ) -> Option<C::Verdict> {
        loop {
            match self.step(None) {
                Step::Effect(token, lookups) => {
                    let answers = resolve_many(&lookups);
                    self.answered(token, answers);
                }
                // Not reached: every effect is answered before the next step.
                Step::Idle(..) => return None,
                Step::Ended => {
                    return match self.state {
                        State::Done(v) => Some(v),
                        _ => None,
                    }
                }
            }
        }
    }
}

impl<C: Check> CheckSession<C>
where
    C::Verdict: Clone,
{
    /// The next output: an effect, `Idle`, or the end (returned from then on).
    pub fn poll(&mut self, now: Now) -> CheckOutput<C::Verdict> {
        let now = self.clock(now);
        match self.step(Some(now.mono + self.limits.answer_timeout)) {
            Step::Effect(token, lookups) => CheckOutput::Effect(token, lookups),
            Step::Idle(deadline, token) => CheckOutput::Idle {
                deadline,
                timer: deadline.map(|_| CheckTimer::Answer(token)),
            },
            Step::Ended => match &self.state {
                State::Done(v) => CheckOutput::Done(v.clone()),
                State::GaveUp(why) => CheckOutput::GaveUp(*why),
                // Not reached: `step` ends only in `Done` or `GaveUp`.
                _ => CheckOutput::GaveUp(GiveUp::Stuck),
            },
        }
    }
}

/// Runs a check to completion without a clock, as a [`CheckSession`] whose every effect
/// (one round's questions) is answered at once by `resolve_many` (answers in the order
/// asked; missing ones are temporary failures). `None` after `max_questions` questions, or
/// when the check waits for nothing, so a broken check cannot loop forever. For tests and
/// tools over a static zone; a driver with a clock polls a [`CheckSession`] itself.
pub fn run_batched<C: Check>(
    check: &mut C,
    resolve_many: impl FnMut(&[Lookup]) -> Vec<LookupResult>,
    max_questions: usize,
) -> Option<C::Verdict> {
    let limits = CheckLimits {
        max_questions,
        // One round's questions go out together however many there are.
        max_batch: max_questions,
        ..CheckLimits::default()
    };
    CheckSession::new(check, limits).run_untimed(resolve_many)
}

/// [`run_batched`] with a synchronous answer function for one lookup at a time.
pub fn run_sync<C: Check>(
    check: &mut C,
    mut resolve: impl FnMut(&Lookup) -> LookupResult,
    max_questions: usize,
) -> Option<C::Verdict> {
    run_batched(
        check,
        |qs| qs.iter().map(&mut resolve).collect(),
        max_questions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{CheckStep, Record, RecordType};
    use crate::UnixTime;

    fn now0() -> Now {
        #[allow(clippy::disallowed_methods)]
        let mono = Instant::now();
        Now {
            mono,
            wall: UnixTime(1_700_000_000),
        }
    }

    fn a(name: &str) -> Lookup {
        Lookup {
            name: name.into(),
            rtype: RecordType::A,
        }
    }

    /// Asks `x.test` and `y.test` together, then `z.test`; its verdict is what it was told,
    /// in order ("x:records y:nx z:temp").
    #[derive(Default)]
    struct Two {
        asked: usize,
        heard: Vec<String>,
    }

    fn word(r: &LookupResult) -> &'static str {
        match r {
            LookupResult::Records { .. } => "records",
            LookupResult::NxDomain => "nx",
            LookupResult::NoData => "nodata",
            LookupResult::TempFail(_) => "temp",
        }
    }

    impl Check for Two {
        type Verdict = String;
        fn poll(&mut self) -> CheckStep<String> {
            let want = ["x.test", "y.test", "z.test"];
            match self.asked {
                0 | 1 => {
                    self.asked += 1;
                    CheckStep::Lookup(a(want[self.asked - 1]))
                }
                2 if self.heard.len() == 2 => {
                    self.asked += 1;
                    CheckStep::Lookup(a(want[2]))
                }
                3 if self.heard.len() == 3 => CheckStep::Done(self.heard.join(" ")),
                _ => CheckStep::Wait,
            }
        }
        fn answer(&mut self, l: &Lookup, r: LookupResult) {
            self.heard.push(format!("{}:{}", &l.name[..1], word(&r)));
        }
    }

    fn records() -> LookupResult {
        LookupResult::Records {
            records: vec![Record::A([192, 0, 2, 1].into())],
            authentic: false,
        }
    }

    const LIMITS: CheckLimits = CheckLimits {
        answer_timeout: Duration::from_secs(5),
        max_questions: 10,
        max_batch: 10,
    };

    /// The whole shape: one effect per round with its token, Idle naming that effect's
    /// timer, a stale token ignored, an answer matched by token, the verdict repeated.
    #[test]
    fn transcript_tokens_idle_done() {
        let now = now0();
        let mut s = CheckSession::new(Two::default(), LIMITS);
        let CheckOutput::Effect(t0, qs) = s.poll(now) else {
            panic!("expected the first effect");
        };
        assert_eq!(qs, vec![a("x.test"), a("y.test")]);
        assert_eq!(
            s.poll(now),
            CheckOutput::Idle {
                deadline: Some(now.mono + Duration::from_secs(5)),
                timer: Some(CheckTimer::Answer(t0)),
            }
        );
        // A token nobody asked with: ignored.
        s.handle(now, CheckInput::Answered(Token(t0.0 + 7), vec![records()]));
        assert!(matches!(s.poll(now), CheckOutput::Idle { .. }));
        s.handle(
            now,
            CheckInput::Answered(t0, vec![records(), LookupResult::NxDomain]),
        );
        let CheckOutput::Effect(t1, qs) = s.poll(now) else {
            panic!("expected the second effect");
        };
        assert_ne!(t1, t0);
        assert_eq!(qs, vec![a("z.test")]);
        // The first effect's answer again: stale, ignored (z stays unanswered).
        s.handle(now, CheckInput::Answered(t0, vec![records(), records()]));
        assert!(matches!(
            s.poll(now),
            CheckOutput::Idle { timer: Some(CheckTimer::Answer(t)), .. } if t == t1
        ));
        s.handle(
            now,
            CheckInput::Answered(t1, vec![LookupResult::TempFail("x".into())]),
        );
        let verdict = "x:records y:nx z:temp".to_string();
        assert_eq!(s.poll(now), CheckOutput::Done(verdict.clone()));
        assert_eq!(s.poll(now), CheckOutput::Done(verdict));
    }

    /// The deadline is inside: an effect whose answer never comes is answered with
    /// temporary failures at its deadline (not before), and its late answer is stale.
    #[test]
    fn deadline_inside_late_answer_stale() {
        let now = now0();
        let mut s = CheckSession::new(Two::default(), LIMITS);
        let CheckOutput::Effect(t0, _) = s.poll(now) else {
            panic!("expected an effect");
        };
        // Early: nothing happens.
        s.handle(now.advance(Duration::from_secs(4)), CheckInput::Timeout);
        assert!(matches!(s.poll(now), CheckOutput::Idle { .. }));
        let t5 = now.advance(Duration::from_secs(5));
        s.handle(t5, CheckInput::Timeout);
        let CheckOutput::Effect(t1, _) = s.poll(t5) else {
            panic!("expected the next round after the timeout");
        };
        // The late answer to the first effect does not count.
        s.handle(t5, CheckInput::Answered(t0, vec![records(), records()]));
        s.handle(t5, CheckInput::Answered(t1, vec![records()]));
        assert_eq!(
            s.poll(t5),
            CheckOutput::Done("x:temp y:temp z:records".into())
        );
    }

    /// A `now` earlier than one given before is ignored: the deadline of an effect asked
    /// then is counted from the latest time, and a timeout "at" the earlier clock does not
    /// fire it.
    #[test]
    fn earlier_now_is_ignored() {
        let now = now0();
        let late = now.advance(Duration::from_secs(60));
        let mut s = CheckSession::new(Two::default(), LIMITS);
        s.handle(late, CheckInput::Timeout);
        let CheckOutput::Effect(t0, _) = s.poll(now) else {
            panic!("expected an effect");
        };
        assert_eq!(
            s.poll(now),
            CheckOutput::Idle {
                deadline: Some(late.mono + Duration::from_secs(5)),
                timer: Some(CheckTimer::Answer(t0)),
            }
        );
        s.handle(now.advance(Duration::from_secs(5)), CheckInput::Timeout);
        assert!(matches!(s.poll(now), CheckOutput::Idle { .. }));
    }

    /// `max_batch` splits a round: the rest of the questions come in the next effect.
    #[test]
    fn batches_are_bounded() {
        let now = now0();
        let limits = CheckLimits {
            max_batch: 1,
            ..LIMITS
        };
        let mut s = CheckSession::new(Two::default(), limits);
        let CheckOutput::Effect(t0, q0) = s.poll(now) else {
            panic!("expected an effect");
        };
        assert_eq!(q0, vec![a("x.test")]);
        s.handle(now, CheckInput::Answered(t0, vec![records()]));
        let CheckOutput::Effect(t1, q1) = s.poll(now) else {
            panic!("expected an effect");
        };
        assert_eq!(q1, vec![a("y.test")]);
        s.handle(now, CheckInput::Answered(t1, vec![records()]));
        assert!(matches!(s.poll(now), CheckOutput::Effect(_, q) if q == vec![a("z.test")]));
        assert_eq!(s.verdict(), None);
    }

    /// Bounded: a check asking more than `max_questions`, or waiting for nothing, ends
    /// without a verdict instead of looping.
    #[test]
    fn gives_up() {
        let now = now0();
        let mut s = CheckSession::new(
            Two::default(),
            CheckLimits {
                max_questions: 2,
                ..LIMITS
            },
        );
        let CheckOutput::Effect(t0, _) = s.poll(now) else {
            panic!("expected an effect");
        };
        s.handle(now, CheckInput::Answered(t0, vec![records(), records()]));
        assert_eq!(s.poll(now), CheckOutput::GaveUp(GiveUp::TooManyQuestions));
        assert_eq!(s.poll(now), CheckOutput::GaveUp(GiveUp::TooManyQuestions));

        struct Stuck;
        impl Check for Stuck {
            type Verdict = ();
            fn poll(&mut self) -> CheckStep<()> {
                CheckStep::Wait
            }
            fn answer(&mut self, _: &Lookup, _: LookupResult) {}
        }
        let mut s = CheckSession::new(Stuck, LIMITS);
        assert_eq!(s.poll(now), CheckOutput::GaveUp(GiveUp::Stuck));
    }

    /// Asks `names` all at once, then one more name after the answers, then concludes
    /// with the number of answers it got; `stuck` waits without asking instead.
    struct Fan {
        names: Vec<&'static str>,
        asked: usize,
        answered: usize,
        second: bool,
        stuck: bool,
    }

    impl Check for Fan {
        type Verdict = usize;
        fn poll(&mut self) -> CheckStep<usize> {
            if self.stuck {
                return CheckStep::Wait;
            }
            if let Some(n) = self.names.get(self.asked) {
                self.asked += 1;
                return CheckStep::Lookup(a(n));
            }
            if self.answered < self.asked {
                return CheckStep::Wait;
            }
            if !self.second {
                self.second = true;
                self.names.push("last.test");
                return self.poll();
            }
            CheckStep::Done(self.answered)
        }
        fn answer(&mut self, _: &Lookup, _: LookupResult) {
            self.answered += 1;
        }
    }

    fn fan(names: &[&'static str]) -> Fan {
        Fan {
            names: names.to_vec(),
            asked: 0,
            answered: 0,
            second: false,
            stuck: false,
        }
    }

    /// Untimed driving ([`run_batched`]): the questions a check asks before it waits go out
    /// as one batch, not one by one.
    #[test]
    fn run_batched_batches_the_questions() {
        let mut batches = Vec::new();
        let v = run_batched(
            &mut fan(&["a.test", "b.test", "c.test"]),
            |qs| {
                batches.push(qs.len());
                qs.iter().map(|_| LookupResult::NxDomain).collect()
            },
            10,
        );
        assert_eq!(v, Some(4));
        assert_eq!(batches, vec![3, 1]);
    }

    /// Untimed driving is bounded like the session: a budget smaller than the check's
    /// questions, or a check that waits for nothing, gives `None` instead of looping.
    #[test]
    fn run_batched_is_bounded() {
        let nx = |qs: &[Lookup]| qs.iter().map(|_| LookupResult::NxDomain).collect();
        assert_eq!(run_batched(&mut fan(&["a.test", "b.test"]), nx, 2), None);
        assert_eq!(run_batched(&mut fan(&["a.test", "b.test"]), nx, 3), Some(3));
        let mut stuck = fan(&["a.test"]);
        stuck.stuck = true;
        assert_eq!(run_batched(&mut stuck, nx, 10), None);
        // Fewer answers than questions: the missing ones are temporary failures.
        assert_eq!(
            run_batched(&mut fan(&["a.test", "b.test"]), |_| Vec::new(), 5),
            Some(3)
        );
        let mut heard = Vec::new();
        let v = run_sync(
            &mut Two::default(),
            |l| {
                heard.push(l.name.clone());
                records()
            },
            3,
        );
        assert_eq!(v.as_deref(), Some("x:records y:records z:records"));
        assert_eq!(heard, ["x.test", "y.test", "z.test"]);
    }
}
