// Feedback: toasts, and errors next to their cause.
import {$, $$} from './dom.js';

export function toast(message, bad = false) {
  let box = $('.toasts'); if (!box) { box = document.createElement('div'); box.className = 'toasts'; box.setAttribute('role', 'status'); document.body.append(box); }
  const t = document.createElement('div'); t.className = 'toast' + (bad ? ' bad' : ''); t.textContent = message; box.append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}
function clearErrors(form) {
  $$('.field-error', form).forEach(e => e.remove()); $$('.invalid', form).forEach(e => e.classList.remove('invalid'));
  const general = $('.error', form); if (general) general.textContent = '';
}
// Put the message under the input it is about (the server names the field), else in the form's error line.
export function showError(form, err, fieldName) {
  clearErrors(form);
  const text = err.message + (err.details && err.details !== err.message ? ` (${err.details})` : '');
  const fields = $$('[name]', form).filter(el => el.name && el.type !== 'hidden');
  const named = fieldName ? form.elements[fieldName] : null; // several inputs of one name (rows): the first
  const target = fieldName ? (named instanceof RadioNodeList ? named[0] : named)
    : fields.find(el => new RegExp(`\\b${el.name}\\b`, 'i').test(err.message) || (el.dataset.errorHint && new RegExp(el.dataset.errorHint, 'i').test(err.message)));
  if (target && target.insertAdjacentElement) {
    target.classList.add('invalid'); target.setAttribute('aria-invalid', 'true');
    const note = document.createElement('div'); note.className = 'field-error'; note.setAttribute('role', 'alert'); note.textContent = text;
    (target.closest('.pair') || target).insertAdjacentElement('afterend', note); target.focus();
  } else { const general = $('.error', form); if (general) general.textContent = text; else toast(text, true); }
}
// The first pages' helper: an error goes next to its field; a plain {message} (such as "Saved.") to the form's line.
export const formError = (form, err) => { if (err instanceof Error) showError(form, err); else { const line = $('.error', form); if (line) line.textContent = err.message; } };
// Submit handler with errors shown in the form and the button disabled while it runs.
export function onSubmit(form, fn) {
  // An error note goes away as soon as the user edits the field it is about.
  form.addEventListener('input', e => {
    const field = e.target; if (!field.classList || !field.classList.contains('invalid')) return;
    field.classList.remove('invalid'); field.removeAttribute('aria-invalid');
    const note = (field.closest('.pair') || field).nextElementSibling; if (note && note.classList.contains('field-error')) note.remove();
  });
  form.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(form); const button = $('button[type=submit], button:not([type])', form);
    if (button) button.disabled = true;
    try { await fn(new FormData(form)); } catch (err) { if (err.name !== 'AbortError') showError(form, err); }
    finally { if (button) button.disabled = false; }
  });
}
export function download(href, filename) { const a = document.createElement('a'); a.href = href; a.download = filename || ''; document.body.append(a); a.click(); a.remove(); }
