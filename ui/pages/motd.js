// The message of the day: the administrator's card on the settings page (PUT /api/settings MessageOfTheDay) and
// the banner on the home page (GET /api/motd). The text is an administrator's input: it is shown as text, never HTML.
import {api} from '../api.js';
import {$} from '../dom.js';
import {formError, onSubmit} from '../feedback.js';
import {esc} from '../format.js';

// The Hash (of the message) the user dismissed in this browser, as Portainer does: a new message shows again.
const DISMISSED_KEY = 'motd-dismissed';

// Settings page: Title and Message, saved together; an empty message shows no banner.
export function motdSettingsCard(main, settings) {
  const motd = settings.MessageOfTheDay || {};
  const form = document.createElement('form'); form.className = 'card'; form.id = 'motd-settings';
  form.innerHTML = `<h2>Message of the day</h2><p class="muted">Shown as a banner on the home page of every user until they dismiss it. Leave the message empty to show none.</p>
    <label for="motd-title">Title</label><input id="motd-title" name="Title" value="${esc(motd.Title)}">
    <label for="motd-message">Message</label><textarea id="motd-message" name="Message" rows="4">${esc(motd.Message)}</textarea>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save the message</button></p>`;
  main.append(form);
  onSubmit(form, async data => {
    await api('PUT', '/api/settings', {MessageOfTheDay: {Title: data.get('Title'), Message: data.get('Message')}});
    formError(form, {message: 'Saved.'});
  });
}
// Home page: the banner above the environments, unless there is no message or this one was dismissed.
export function motdBanner(main, motd) {
  if (!motd || !motd.Message || !motd.Hash || localStorage.getItem(DISMISSED_KEY) === motd.Hash) return;
  const banner = document.createElement('section'); banner.className = 'card motd'; banner.id = 'motd';
  banner.setAttribute('aria-label', 'Message of the day');
  banner.innerHTML = `<div class="motd-text"><h3 class="motd-title"></h3><p class="motd-message"></p></div>
    <button type="button" class="small" aria-label="Dismiss the message of the day">&times;</button>`;
  $('.motd-title', banner).textContent = motd.Title || 'Message of the day';
  $('.motd-message', banner).textContent = motd.Message;
  $('button', banner).addEventListener('click', () => { localStorage.setItem(DISMISSED_KEY, motd.Hash); banner.remove(); });
  main.prepend(banner);
}
