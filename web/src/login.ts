// Signing in: the operator's bearer token, checked with GET /api/v1/whoami, kept in this tab's
// sessionStorage only (gone when the tab closes) so a reload does not ask again.

import { Api, ApiError, describe } from "./api";
import type { WhoAmI } from "./messages";
import { clear, say } from "./ui/message";

const TOKEN_KEY = "almere-dashboard-token";
const NOTICE_KEY = "almere-dashboard-notice"; // why the last session ended, shown after the reload

export interface Session {
  api: Api;
  who: WhoAmI;
}

/** Resolves with a session: from the token this tab already holds, or once the form is sent. */
export async function signIn(form: HTMLFormElement, input: HTMLInputElement): Promise<Session> {
  const notice = sessionStorage.getItem(NOTICE_KEY);
  sessionStorage.removeItem(NOTICE_KEY);
  if (notice) say(notice);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      return await check(saved);
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      say(`Sign in again: ${describe(error)}`);
    }
  }
  form.hidden = false;
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      check(token)
        .then((session) => {
          clear();
          input.value = "";
          form.hidden = true;
          resolve(session);
        })
        .catch((error: unknown) => {
          const unknown = error instanceof ApiError && error.status === 401;
          say(unknown ? `Unknown token: ${describe(error)}` : `Cannot sign in: ${describe(error)}`);
        });
    });
  });
}

async function check(token: string): Promise<Session> {
  const api = new Api(token);
  const who = await api.get<WhoAmI>("/api/v1/whoami");
  sessionStorage.setItem(TOKEN_KEY, token);
  return { api, who };
}

/** Ends the session: forgets the token and starts the page afresh (every stream and poll ends). */
export function signOut(notice?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  if (notice) sessionStorage.setItem(NOTICE_KEY, notice);
  location.reload();
}
