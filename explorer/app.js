// The explorer's router: the hash names the page (#/receipts, #/receipt/<id>, #/gpus,
// #/market, #/account/<address>), so every page is a real link and works without a server
// route of its own.
import * as views from './views.js';

const main = /** @type {HTMLElement} */ (document.getElementById('main'));
/** @type {(() => void) | void} */
let stop;

function route() {
  // In-page anchors (the skip link's #main) are not pages.
  if (location.hash && !location.hash.startsWith('#/')) return;
  if (stop) stop();
  const [path, query] = (location.hash.slice(1) || '/receipts').split('?');
  const params = new URLSearchParams(query ?? '');
  const [, name, arg] = path.split('/');
  const id = arg ? decodeURIComponent(arg) : '';
  switch (name) {
    case 'receipt': stop = views.receipt(main, id); break;
    case 'gpus': stop = views.gpus(main, params); break;
    case 'market': stop = views.market(main, params); break;
    case 'account': stop = views.account(main, id, params); break;
    default: stop = views.receipts(main, params);
  }
  for (const link of document.querySelectorAll('header nav a')) {
    const current = link.getAttribute('href') === '#/' + (name === 'receipt' ? 'receipts' : name || 'receipts');
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.querySelector('h1')?.focus({ preventScroll: true });
}

addEventListener('hashchange', route);
route();
