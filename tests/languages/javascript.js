const name = require('fs').readFileSync(0, 'utf8').split('\n')[0];
console.log('hello ' + name);
console.error('err');
process.exit(3);
