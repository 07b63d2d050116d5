import { useEffect, useRef } from "preact/hooks";

/** A modal dialog (the browser's own <dialog>: focus is trapped, Escape closes it). */
export function Modal({ title, onClose, children }: { title: string; onClose: () => void; children: preact.ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => ref.current?.showModal(), []);
  return (
    <dialog ref={ref} class="dialog" aria-label={title} onClose={onClose}>
      {children}
    </dialog>
  );
}
