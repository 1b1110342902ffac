/**
 * A tiny element helper. Text always goes in as text nodes (never innerHTML), so data from
 * the API cannot become markup.
 */

export type Child = Node | string | number | null | undefined | false | readonly Child[];

/** Attributes; `on<event>` keys take listeners; `value` and `checked` are set as properties. */
export type Attrs = Record<string, string | number | boolean | null | undefined | ((event: Event) => void)>;

function appendChildren(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendChildren(parent, child as readonly Child[]);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value' || key === 'checked') Object.assign(el, { [key]: value });
    else el.setAttribute(key === 'className' ? 'class' : key, value === true ? '' : String(value));
  }
  appendChildren(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  appendChildren(el, children);
}

/** Sets a text only when it changed (no needless layout on every tick). */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}
