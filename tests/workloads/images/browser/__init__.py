"""Browser tests of the images page.

A package of their own: Playwright holds the thread's event loop while its
browser is open, and the browser fixture lives as long as its package.
"""
