// The page's root element and the two query shortcuts every page uses.
export const $app = document.getElementById('app');
export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
