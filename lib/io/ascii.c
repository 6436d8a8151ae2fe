#include "io/ascii.h"

#include <string.h>
#include <time.h>

#define T1(c) [(unsigned char)(c)] = 1
const unsigned char io_tchar[256] = {
    T1('!'), T1('#'), T1('$'), T1('%'), T1('&'), T1('\''), T1('*'), T1('+'), T1('-'), T1('.'),
    T1('^'), T1('_'), T1('`'), T1('|'), T1('~'),
    T1('0'), T1('1'), T1('2'), T1('3'), T1('4'), T1('5'), T1('6'), T1('7'), T1('8'), T1('9'),
    T1('A'), T1('B'), T1('C'), T1('D'), T1('E'), T1('F'), T1('G'), T1('H'), T1('I'), T1('J'),
    T1('K'), T1('L'), T1('M'), T1('N'), T1('O'), T1('P'), T1('Q'), T1('R'), T1('S'), T1('T'),
    T1('U'), T1('V'), T1('W'), T1('X'), T1('Y'), T1('Z'),
    T1('a'), T1('b'), T1('c'), T1('d'), T1('e'), T1('f'), T1('g'), T1('h'), T1('i'), T1('j'),
    T1('k'), T1('l'), T1('m'), T1('n'), T1('o'), T1('p'), T1('q'), T1('r'), T1('s'), T1('t'),
    T1('u'), T1('v'), T1('w'), T1('x'), T1('y'), T1('z'),
};

const char io_month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static char *put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

void io_fmt_http_date(char *out, int64_t t)
{
    /* Fixed English names: strftime's %a and %b follow the host program's locale. */
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    if (t < IO_HTTP_DATE_MIN)
        t = IO_HTTP_DATE_MIN;
    if (t > IO_HTTP_DATE_MAX)
        t = IO_HTTP_DATE_MAX;
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char *p = out;
    memcpy(p, days[tm.tm_wday % 7], 3);
    p[3] = ',';
    p[4] = ' ';
    p = put2(p + 5, tm.tm_mday);
    *p++ = ' ';
    memcpy(p, io_month_names[tm.tm_mon % 12], 3);
    p[3] = ' ';
    int year = tm.tm_year + 1900;
    p = put2(put2(p + 4, year / 100), year % 100);
    *p++ = ' ';
    p = put2(p, tm.tm_hour);
    *p++ = ':';
    p = put2(p, tm.tm_min);
    *p++ = ':';
    p = put2(p, tm.tm_sec);
    memcpy(p, " GMT", 4);
}
