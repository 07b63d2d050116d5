// The first-visit tour: three steps (browse, deploy, chat), Skip or Next; finishing or skipping
// is remembered in localStorage so it shows once.
import { useEffect, useRef, useState } from "preact/hooks";

export const TOUR_KEY = "agentmarket.tour";

const STEPS = [
  { title: "Browse", text: "Search and filter the marketplace to find an agent for your task. Filters stay in the address, so you can share a view." },
  { title: "Deploy", text: "Open an agent and choose Deploy. Fill in its settings (they are checked as you go) to get your own copy." },
  { title: "Chat", text: "After deploying you go straight to the chat. Replies stream in; you can stop one, and your history is kept." },
];

export function Tour() {
  const [step, setStep] = useState(() => (localStorage.getItem(TOUR_KEY) ? -1 : 0));
  const heading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    if (step > 0) heading.current?.focus();
  }, [step]);

  if (step < 0) return null;
  const current = STEPS[step];
  if (!current) return null;
  const finish = (how: string) => {
    localStorage.setItem(TOUR_KEY, how);
    setStep(-1);
  };
  return (
    <aside class="tour" role="region" aria-labelledby="tour-title">
      <p class="tour-step">
        Step {step + 1} of {STEPS.length}
      </p>
      <h2 id="tour-title" ref={heading} tabIndex={-1}>
        Welcome! {current.title}
      </h2>
      <p>{current.text}</p>
      <div class="actions">
        {step < STEPS.length - 1 ? (
          <button type="button" onClick={() => setStep(step + 1)}>
            Next
          </button>
        ) : (
          <button type="button" onClick={() => finish("done")}>
            Done
          </button>
        )}
        <button type="button" class="secondary" onClick={() => finish("skipped")}>
          Skip tour
        </button>
      </div>
    </aside>
  );
}
