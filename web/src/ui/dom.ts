// Building the page's elements without a framework.

type Child = Node | string | null | undefined | false;

/** An element with attributes (undefined ones left out) and children (empty ones left out). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function button(label: string, testid: string | undefined, onClick: (button: HTMLButtonElement) => void): HTMLButtonElement {
  const node = el("button", { type: "button", "data-testid": testid }, label);
  node.addEventListener("click", () => onClick(node));
  return node;
}

/** Runs an action with its button disabled, so one click sends one request. */
export async function busy(node: HTMLButtonElement, action: () => Promise<void>): Promise<void> {
  node.disabled = true;
  try {
    await action();
  } finally {
    node.disabled = false;
  }
}
