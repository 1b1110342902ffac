/** `#/signin`: an operator token, checked with GET /api/me, kept on this device or for this tab. */
import { getMe, saveToken, session } from '../api.ts';
import { h } from '../dom.ts';
import type { ViewContext } from '../router.ts';
import { messages, ready, viewRoot } from '../ui.ts';

export function signinView(_ctx: ViewContext, options: { message: string; signedIn: () => void }): HTMLElement {
  const notes = messages();
  if (options.message !== '') notes.info(options.message, 'warn');
  const token = h('input', { type: 'password', name: 'token', id: 'token', required: true, autocomplete: 'current-password', spellcheck: 'false' });
  const remember = h('input', { type: 'checkbox', name: 'remember', checked: true });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Sign in');

  const onsubmit = (event: Event) => {
    event.preventDefault();
    const value = token.value.trim();
    if (value === '') return;
    submit.disabled = true;
    notes.info('Checking the token…');
    getMe(value).then(
      (me) => {
        saveToken(value, remember.checked);
        session.me = me;
        options.signedIn();
      },
      (err: unknown) => {
        submit.disabled = false;
        notes.error(err);
        token.select();
      },
    );
  };

  const root = viewRoot(
    'signin',
    'Sign in',
    h(
      'form',
      { class: 'signin panel', onsubmit },
      h('label', { for: 'token' }, 'Operator token'),
      token,
      h(
        'p',
        { class: 'hint' },
        'The admin token is in ',
        h('code', null, '<data-dir>/admin.token'),
        '; ',
        h('code', null, 'voltline tokens create --scope read'),
        ' makes a read-only one.',
      ),
      h('label', { class: 'check' }, remember, 'Remember on this device'),
      submit,
      notes.el,
    ),
  );
  queueMicrotask(() => token.focus());
  ready(root);
  return root;
}
