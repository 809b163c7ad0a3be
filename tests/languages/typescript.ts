declare const require: any;
declare const process: any;
const who: string = require('fs').readFileSync(0, 'utf8').split('\n')[0];
console.log('hello ' + who);
console.error('err');
process.exit(3);
