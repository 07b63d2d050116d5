// The satisfaction survey: asked once, after the first completed chat, and dismissible.
import { useEffect, useState } from "preact/hooks";
import { api, errorMessage } from "../lib/api";

export const SURVEY_KEY = "agentmarket.survey";

interface SurveyState {
  answered: boolean;
  answered_at: string | null;
  should_ask: boolean;
}

function Scale({
  name,
  legend,
  from,
  to,
  low,
  high,
  value,
  onChange,
}: {
  name: string;
  legend: string;
  from: number;
  to: number;
  low: string;
  high: string;
  value: number | null;
  onChange: (n: number) => void;
}) {
  return (
    <fieldset class="scale">
      <legend>{legend}</legend>
      <div class="scale-options">
        {Array.from({ length: to - from + 1 }, (_, i) => from + i).map((n) => (
          <label key={n} class="scale-option">
            <input type="radio" name={name} value={n} checked={value === n} onChange={() => onChange(n)} />
            <span>{n}</span>
          </label>
        ))}
      </div>
      <p class="hint scale-ends">
        <span>
          {from} = {low}
        </span>
        <span>
          {to} = {high}
        </span>
      </p>
    </fieldset>
  );
}

export function Survey({ deploymentId }: { deploymentId: string }) {
  const [visible, setVisible] = useState(false);
  const [satisfaction, setSatisfaction] = useState<number | null>(null);
  const [ease, setEase] = useState<number | null>(null);
  const [recommend, setRecommend] = useState<number | null>(null);
  const [comment, setComment] = useState("");
  const [state, setState] = useState<"ask" | "sending" | "thanks">("ask");
  const [error, setError] = useState("");

  useEffect(() => {
    if (localStorage.getItem(SURVEY_KEY)) return;
    const controller = new AbortController();
    api<SurveyState>("/api/marketplace/survey", { signal: controller.signal }).then(
      (s) => {
        if (s.should_ask && !s.answered) setVisible(true);
        else localStorage.setItem(SURVEY_KEY, "answered");
      },
      () => undefined, // no survey on this server: nothing to ask
    );
    return () => controller.abort();
  }, []);

  if (!visible) return null;

  const dismiss = () => {
    localStorage.setItem(SURVEY_KEY, "dismissed");
    setVisible(false);
  };

  const submit = async (e: Event) => {
    e.preventDefault();
    if (satisfaction === null || ease === null || recommend === null) {
      setError("Please answer the three questions, or choose Not now.");
      return;
    }
    setState("sending");
    setError("");
    try {
      const body: Record<string, unknown> = {
        deployment_id: deploymentId,
        satisfaction,
        ease_of_use: ease,
        likelihood_to_recommend: recommend,
      };
      if (comment.trim()) body.comment = comment.trim();
      await api("/api/marketplace/survey", { body });
      localStorage.setItem(SURVEY_KEY, "answered");
      setState("thanks");
    } catch (err) {
      setError(errorMessage(err));
      setState("ask");
    }
  };

  return (
    <aside class="survey card" aria-labelledby="survey-title">
      {state === "thanks" ? (
        <>
          <h2 id="survey-title">Thank you!</h2>
          <p role="status">Your answers help us make the marketplace better.</p>
          <button type="button" class="secondary" onClick={() => setVisible(false)}>
            Close
          </button>
        </>
      ) : (
        <form onSubmit={(e) => void submit(e)}>
          <h2 id="survey-title">How was your first chat?</h2>
          <Scale name="satisfaction" legend="How satisfied are you with the agent?" from={1} to={5} low="not at all" high="very" value={satisfaction} onChange={setSatisfaction} />
          <Scale name="ease" legend="How easy was it to set up and use?" from={1} to={5} low="very hard" high="very easy" value={ease} onChange={setEase} />
          <Scale name="recommend" legend="How likely are you to recommend Agent Marketplace to a friend?" from={0} to={10} low="not likely" high="very likely" value={recommend} onChange={setRecommend} />
          <div class="field">
            <label for="survey-comment">
              Anything else? <span class="optional">(optional)</span>
            </label>
            <textarea id="survey-comment" rows={2} maxLength={2000} value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
          </div>
          {error && (
            <p class="field-error" role="alert">
              {error}
            </p>
          )}
          <div class="actions">
            <button type="submit" disabled={state === "sending"}>
              Send answers
            </button>
            <button type="button" class="secondary" onClick={dismiss}>
              Not now
            </button>
          </div>
        </form>
      )}
    </aside>
  );
}
